"""Budget BERT of Cramming (Geiping & Goldstein 2022, https://arxiv.org/abs/2212.14034), our own module.

Pre-LN blocks, no biases in the linears, a gated GELU-GLU FFN whose two linears (`ffn.dense_in`,
`ffn.dense_out`) are what `sparse_core.sparsify` makes 2:4, an MLM decoder tied to the word
embeddings that scores only the masked positions.
Hugging Face file layout without `transformers.PreTrainedModel` (its import pulls in torchvision, and
its API moves between 4.x and 5.x): `save_pretrained(dir)` writes config.json + model.safetensors,
`from_pretrained(dir)` reads them back into the MLM or the classification model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

MODEL_TYPE = "crammed_bert"

__all__ = ["CrammedBertConfig", "Output", "CrammedBertModel", "CrammedBertForMaskedLM",
           "CrammedBertForSequenceClassification"]


@dataclass
class CrammedBertConfig:
    """Sizes of the budget BERT; 16 layers / 768 hidden / 12 heads / 3072 GLU width at full size."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 16
    num_attention_heads: int = 12
    intermediate_size: int = 3072  # output width of ffn.dense_in: value and gate halves
    max_position_embeddings: int = 128
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.0
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    num_labels: int = 2  # classification head only; 1 = regression

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": MODEL_TYPE, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides: Any) -> "CrammedBertConfig":
        """Build from a config.json dict; refuse another model type and unknown keys."""
        d = dict(d)
        kind = d.pop("model_type", MODEL_TYPE)
        d.pop("architectures", None)
        if kind != MODEL_TYPE:
            raise ValueError(f"config.json has model_type={kind!r}, expected {MODEL_TYPE!r}")
        d.update(overrides)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown CrammedBertConfig keys: {sorted(unknown)}")
        return cls(**d)


class Embeddings(nn.Module):
    """Word + learned position + segment embeddings, then LayerNorm."""

    def __init__(self, cfg: CrammedBertConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        T = input_ids.shape[1]
        if T > self.position.num_embeddings:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings={self.position.num_embeddings}")
        x = self.word(input_ids) + self.position(torch.arange(T, device=input_ids.device))  # (B, T, H)
        if token_type_ids is not None:
            x = x + self.token_type(token_type_ids)
        return self.dropout(self.norm(x))


class Attention(nn.Module):
    """Multi-head self-attention through scaled_dot_product_attention; qkv in one bias-free linear."""

    def __init__(self, cfg: CrammedBertConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=False)
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.dropout_p = cfg.hidden_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, H = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, H // self.num_heads).permute(2, 0, 3, 1, 4)  # (B, nh, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, T, H))


class GatedFFN(nn.Module):
    """GELU-GLU: dense_in to 2 x (intermediate/2), GELU(value) * gate, dense_out back; both 2:4 targets."""

    def __init__(self, cfg: CrammedBertConfig) -> None:
        super().__init__()
        self.dense_in = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.dense_out = nn.Linear(cfg.intermediate_size // 2, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.dense_in(x).chunk(2, dim=-1)
        return self.dense_out(F.gelu(value) * gate)


class Layer(nn.Module):
    """Pre-LN transformer block: x + attn(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, cfg: CrammedBertConfig) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = Attention(cfg)
        self.norm_ffn = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn = GatedFFN(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm_attn(x), mask))
        return x + self.dropout(self.ffn(self.norm_ffn(x)))


class Output(NamedTuple):
    loss: torch.Tensor | None
    logits: torch.Tensor


class CrammedBertPreTrainedModel(nn.Module):
    """Shared plumbing: weight init and the HF file layout (config.json + model.safetensors)."""

    def __init__(self, config: CrammedBertConfig) -> None:
        super().__init__()
        self.config = config

    def init_weights(self) -> None:
        """Normal(0, initializer_range) linears and embeddings, unit LayerNorms, zero biases."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json and model.safetensors (dense weights only: densify a sparse model first)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        masks = [k for k in state if k.endswith(".mask") or k.endswith(".backward_mask")]
        if masks:
            raise ValueError(f"model still holds 2:4 masks ({masks[:2]}...): call sparse_core.densify on a copy first")
        config = {**self.config.to_dict(), "architectures": [type(self).__name__]}
        tmp = directory / "model.safetensors.tmp"
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
        tmp.replace(directory / "model.safetensors")
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, **config_overrides: Any) -> "CrammedBertPreTrainedModel":
        """Load a saved model; the encoder (`bert.*`) must match, heads absent from the file start fresh."""
        from safetensors.torch import load_file

        directory = Path(directory)
        for name in ("config.json", "model.safetensors"):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name} does not exist (not a saved crammed BERT)")
        config = CrammedBertConfig.from_dict(json.loads((directory / "config.json").read_text()), **config_overrides)
        model = cls(config)
        state = load_file(str(directory / "model.safetensors"))
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        if any(k.startswith("bert.") for k in missing):
            raise ValueError(f"{directory}: encoder weights missing from the file: {missing[:4]}")
        model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        return model


class CrammedBertModel(nn.Module):
    """Embeddings, the pre-LN layers and a final LayerNorm; returns hidden states (B, T, H)."""

    def __init__(self, config: CrammedBertConfig) -> None:
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"hidden_size={config.hidden_size} is not divisible by "
                             f"num_attention_heads={config.num_attention_heads}")
        if config.intermediate_size % 2:
            raise ValueError(f"intermediate_size={config.intermediate_size} must be even (GLU halves it)")
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embeddings(input_ids, token_type_ids)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask[:, None, None, :].bool()  # (B, 1, 1, T): keys a query may attend to
        for layer in self.layers:
            x = layer(x, mask)
        return self.final_norm(x)


class CrammedBertForMaskedLM(CrammedBertPreTrainedModel):
    """MLM head (dense, GELU, norm) and a decoder tied to the word embeddings.

    With `labels`, logits are computed only where labels != -100 (Cramming's sparse prediction):
    `logits` is then (n_masked, vocab), otherwise (B, T, vocab).
    """

    def __init__(self, config: CrammedBertConfig) -> None:
        super().__init__(config)
        self.bert = CrammedBertModel(config)
        self.head_dense = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.head_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> Output:
        h = self.bert(input_ids, attention_mask, token_type_ids)
        if labels is not None:
            keep = labels.reshape(-1) != -100
            h, targets = h.reshape(-1, h.shape[-1])[keep], labels.reshape(-1)[keep]  # (n_masked, H)
        h = self.head_norm(F.gelu(self.head_dense(h)))
        logits = F.linear(h, self.bert.embeddings.word.weight)  # tied decoder
        loss = F.cross_entropy(logits.float(), targets) if labels is not None else None
        return Output(loss, logits)


class CrammedBertForSequenceClassification(CrammedBertPreTrainedModel):
    """[CLS] -> dense, GELU, norm -> classifier; num_labels=1 is regression (MSE), else cross-entropy."""

    def __init__(self, config: CrammedBertConfig) -> None:
        super().__init__(config)
        self.bert = CrammedBertModel(config)
        self.pool_dense = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.pool_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> Output:
        cls = self.bert(input_ids, attention_mask, token_type_ids)[:, 0]  # (B, H)
        logits = self.classifier(self.dropout(self.pool_norm(F.gelu(self.pool_dense(cls)))))
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = F.mse_loss(logits.float().squeeze(-1), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels)
        return Output(loss, logits)

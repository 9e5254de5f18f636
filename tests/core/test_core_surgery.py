"""sparsify / densify / export on GPT-2-, BERT-, LLaMA- and ViT-shaped models built locally."""

import pytest
import torch
import torch.nn as nn

import sparse_core
from sparse_core import SparseLinear

from tiny_models import TinyGPT


def swapped(model):
    return sorted(fqn for fqn, m in model.named_modules() if isinstance(m, SparseLinear))


def test_gpt2_like_swaps_exactly_the_ffn_and_keeps_parameters():
    model = TinyGPT(layers=2)
    params_before = {n: p for n, p in model.named_parameters()}
    ctl = sparse_core.sparsify(model, method="ste")
    assert swapped(model) == ["h.0.mlp.c_fc", "h.0.mlp.c_proj", "h.1.mlp.c_fc", "h.1.mlp.c_proj"]
    assert sorted(ctl.layers) == swapped(model)
    for n, p in model.named_parameters():
        assert p is params_before[n]  # an optimizer built before sparsify stays valid


def test_bert_like_skips_attention_output():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=32)
    model = transformers.BertModel(cfg)
    sparse_core.sparsify(model, method="ste")
    assert swapped(model) == [f"encoder.layer.{i}.{n}" for i in range(2) for n in ("intermediate.dense", "output.dense")]
    out = model(input_ids=torch.randint(0, 64, (2, 8))).last_hidden_state
    assert out.shape == (2, 8, 32)


def test_llama_like_gated_mlp():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=2)
    model = transformers.LlamaForCausalLM(cfg)
    sparse_core.sparsify(model, method="2by4", total_steps=10)
    assert swapped(model) == [f"model.layers.0.mlp.{n}" for n in ("down_proj", "gate_proj", "up_proj")]


def test_timm_vit():
    from deit._torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # CPU torch wheels lack torchvision's C ops (see that module)
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                              depth=2, num_heads=2, num_classes=10)
    sparse_core.sparsify(model, method="ste")
    assert swapped(model) == [f"blocks.{i}.mlp.{n}" for i in range(2) for n in ("fc1", "fc2")]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_include_patterns_and_filter_fn():
    model = TinyGPT(layers=1)
    sparse_core.sparsify(model, method="ste", include=[r"h\.0\.attn\.c_attn"])
    assert swapped(model) == ["h.0.attn.c_attn"]
    model = TinyGPT(layers=1)
    sparse_core.sparsify(model, method="ste", include=lambda m, fqn: fqn.endswith("c_proj"))
    assert swapped(model) == ["h.0.attn.c_proj", "h.0.mlp.c_proj"]


def test_dense_and_half_swap_nothing():
    for method in ("dense", "half"):
        model = TinyGPT(layers=1)
        ctl = sparse_core.sparsify(model, method=method)
        assert swapped(model) == [] and ctl.metrics() == {}
    assert sparse_core.ffn_hidden_dim(3072, "half") == 1536
    assert sparse_core.ffn_hidden_dim(3072, "2by4") == 3072


def test_densify_keeps_outputs():
    model = TinyGPT(layers=1)
    sparse_core.sparsify(model, method="2by4", total_steps=10)
    x = torch.randint(0, 32, (2, 8))
    before = model(x)
    sparse_core.densify(model)
    assert swapped(model) == []
    assert isinstance(model.h[0].mlp.c_fc, nn.Linear)
    assert torch.allclose(model(x), before, atol=1e-6)
    assert ((model.h[0].mlp.c_fc.weight != 0).reshape(-1, 4).sum(-1) <= 2).all()


def test_export_semi_structured_needs_cuda():
    model = TinyGPT(layers=1)
    sparse_core.sparsify(model, method="ste")
    if torch.cuda.is_available():
        pytest.skip("CPU-only check")
    with pytest.raises(RuntimeError, match="CUDA"):
        sparse_core.export_semi_structured(model)


def test_export_semi_structured_refuses_dense_fine_tuned_layers():
    """A layer switched to dense has 4 non-zeros per group: compressing it would drop half its weights silently."""
    model = TinyGPT(layers=1)
    sparse_core.sparsify(model, method="ste")
    model.h[0].mlp.c_proj.mode = "dense"
    with pytest.raises(ValueError, match=r"1 layers \(e.g. h.0.mlp.c_proj\) are in dense mode"):
        sparse_core.export_semi_structured(model)


class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(8, 10)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sparse_core.sparsify(nn.Sequential(nn.Linear(8, 8)), method="ste"), "no nn.Linear matched"),
        (lambda: sparse_core.sparsify(Odd(), method="ste"), r"mlp\.fc1.*out_features = 10"),
        (lambda: sparse_core.sparsify(TinyGPT(), method="magic"), "unknown sparse method 'magic'"),
        (lambda: sparse_core.sparsify(TinyGPT(), method="ste", lambda_x=1), "unknown option"),
        (lambda: sparse_core.sparsify(TinyGPT(), method="ste", mask_refresh_interval=0), "mask_refresh_interval"),
        (lambda: sparse_core.sparsify(TinyGPT(), method="ste", dense_ft_fraction=1.5, total_steps=10), "dense_ft_fraction"),
        (lambda: sparse_core.sparsify(TinyGPT(), method="2by4"), "total_steps"),
        (lambda: sparse_core.ffn_hidden_dim(64, "quarter"), "unknown sparse method"),
        (lambda: sparse_core.ffn_hidden_dim(0, "half"), "hidden must be an int >= 1, got 0"),
    ],
)
def test_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_export_semi_structured_on_gpu():
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("2:4 sparse tensor cores need sm_80+")
    model = TinyGPT(d=64, layers=1, hidden=256, block_size=64).cuda()
    sparse_core.sparsify(model, method="ste")
    model = model.to(torch.bfloat16)
    x = torch.randint(0, 32, (2, 64), device="cuda")
    with torch.no_grad():
        ref = model(x).float()
        sparse_core.export_semi_structured(model)
        out = model(x).float()
    assert type(model.h[0].mlp.c_fc.weight.data).__name__.startswith("SparseSemiStructured")
    assert (out - ref).norm() / ref.norm() < 2e-2

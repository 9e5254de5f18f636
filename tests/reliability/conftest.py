"""Make the helpers of this folder importable (`from reliability_util import ...`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

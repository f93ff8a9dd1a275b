"""The array types the whole house names, each spelled once.

Graphs take and give float32, and every request decodes to float32: that is `FloatArray`.
Scores and statistics are computed in float64: `Float64Array`. Functions that take either
(a graph's output, or float64 maths) say `AnyFloatArray`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]
AnyFloatArray = npt.NDArray[np.floating[Any]]

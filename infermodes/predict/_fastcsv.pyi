# The C extension's interface (_fastcsv.c); infermodes.predict.fastcsv wraps it.
from typing import Any

import numpy as np
import numpy.typing as npt

def parse(data: bytes, width: int, out: npt.NDArray[np.float32], /) -> int: ...
def format(values: npt.NDArray[np.floating[Any]], columns: int, /) -> bytes: ...

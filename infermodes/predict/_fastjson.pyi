# The C extension's interface (_fastjson.c); infermodes.predict.fastjson wraps it.
import numpy as np
import numpy.typing as npt

def scan(data: bytes, out: npt.NDArray[np.float32] | None, /) -> tuple[int, int] | None: ...

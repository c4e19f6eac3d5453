# The C extension's interface (_trees.c); infermodes.predict.trees builds and wraps it.
import numpy as np
import numpy.typing as npt

KERNELS: tuple[str, ...]  # the kernels this CPU runs: "scalar", then "avx2", "avx512"

class Forest:
    kernel: str  # one of KERNELS; a SIMD one only where every tree was padded
    def __init__(
        self,
        left: npt.NDArray[np.int32],
        feature: npt.NDArray[np.int32],
        value: npt.NDArray[np.float32],
        default_left: npt.NDArray[np.uint8],
        roots: npt.NDArray[np.int32],
        base: npt.NDArray[np.float32],
        num_features: int,
        transform: int = 0,
        groups: npt.NDArray[np.int32] | None = None,
    ) -> None: ...
    def predict(self, rows: npt.NDArray[np.float32], out: npt.NDArray[np.float32], /) -> None: ...

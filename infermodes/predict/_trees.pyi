# The C extension's interface (_trees.c); infermodes.predict.trees builds and wraps it.
import numpy as np
import numpy.typing as npt

class Forest:
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

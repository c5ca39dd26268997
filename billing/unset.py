"""`UNSET`: the default of a service's optional keyword that means "not given, keep the value".

`None` cannot say that where None is a value (a draft's number cleared). Annotate such a parameter
`T | Unset` and compare with `is UNSET`.
"""

import enum
from typing import Final, Literal


class Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> Literal[False]:
        return False


UNSET: Final = Unset.UNSET

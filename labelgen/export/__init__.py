"""Label export: the current labels of a snapshot as DIY-SC pseudo-label files, SPair-71k
pair annotations or plain Parquet (`python -m labelgen.export`; __main__ says how)."""

from dataclasses import dataclass


@dataclass
class Written:
    """What a format wrote besides its labels, for the summary."""

    files: int  # annotation or data files
    images: int  # image files placed
    next: str  # how to use the export

"""shapecount: multitask learning (135-way classification + 6 counts) on the GSN shapes dataset."""

__version__ = "0.1.0"

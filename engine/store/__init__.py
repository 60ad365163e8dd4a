from .sqlite import Store, dumps

__all__ = ["Store", "dumps"]

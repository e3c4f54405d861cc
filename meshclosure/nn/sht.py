"""The spherical-harmonic transform, now :mod:`meshclosure.sht` (kept importable here)."""
from ..sht import HealpixSHT, get_sht, legendre_table, n_rings

__all__ = ["HealpixSHT", "legendre_table", "get_sht", "n_rings"]

"""meshclosure: learned, exactly conservative subgrid closures on Earth-system meshes."""
__version__ = "0.1.0"

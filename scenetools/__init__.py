"""scenetools: one file format, the published models and the tools around them for neural
scene representation research. See README.md."""

__version__ = "0.1.0"

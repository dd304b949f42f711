"""clara-wf: define, test and deploy Clara Deploy workflows as Helm charts."""

__version__ = "0.1.0"

"""Code-generation backends: each is a config dataclass, a printer and a template directory."""

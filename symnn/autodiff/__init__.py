"""Reverse-mode chain rule over the tensor IR (see :mod:`.chain`, :mod:`.vjp`)."""

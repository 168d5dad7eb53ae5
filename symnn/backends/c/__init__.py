"""C99 backend: printer, plan lowering and the cffi build of emitted kernels."""

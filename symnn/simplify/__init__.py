"""Cost-aware simplification passes; :mod:`.pipeline` runs them in order and reports op counts."""

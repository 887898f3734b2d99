"""Reference models, one file per family, written on `Graph` (tf.nn ops, explicit variables)."""

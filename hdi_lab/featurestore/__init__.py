"""The Feast glue: the feature repo (``repo``), publishing feature sets to it (``publish``) and the
point-in-time offline store (``offline_store``)."""

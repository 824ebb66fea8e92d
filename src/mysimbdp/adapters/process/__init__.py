"""Starting tenant code: the one runner (:mod:`.runner`) with its child set-up (``_process``,
``_syncchild``) and the kernel sandbox every app runs in (:mod:`.sandbox`, ``_confine``)."""

"""The studies end to end, one sub-package each: ``cliff``, ``heads``, ``abliteration``,
``echo`` and ``judge``. Each sub-package's ``__init__`` is the one way into its study."""

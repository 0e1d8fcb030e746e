"""The one room that imports across rooms: ``build()`` top to bottom (:mod:`.run`), the training
stages (:mod:`.training`), the deploy steps (:mod:`.deploy`, :mod:`.verifying`,
:mod:`.choosing`, :mod:`.measuring`), the Python API (:mod:`.api`) and the one-step API
(:mod:`.steps`, with :mod:`.step_inputs` and :mod:`.step_files`)."""

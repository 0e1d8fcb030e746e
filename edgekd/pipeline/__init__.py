"""The one room that imports across rooms: ``build()`` top to bottom (:mod:`.run`), the
training stages (:mod:`.training`), the deploy steps (:mod:`.deploy`) and the Python API
(:mod:`.api`)."""

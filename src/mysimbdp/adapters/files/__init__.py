"""The platform home on disk and what reads tenants' files there: the home's areas and moves
(:mod:`.home`), fetchers' claims (:mod:`.claims`), the scan and its limited process
(:mod:`.scanner`, :mod:`.scanjob`) and the chunker of big files (:mod:`.chunker`)."""

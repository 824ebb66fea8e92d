"""The composition root and what runs the whole platform: :mod:`.platform` (the one place that
turns settings and URLs into backends), :mod:`.up` (``mysimbdp up``'s wiring: the databroker
and every manager) and :mod:`.demo` (``mysimbdp demo``). Services never import from here but
the platform; here may import services and managers."""

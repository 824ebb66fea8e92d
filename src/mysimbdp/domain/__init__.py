"""Pure core: profiles, names, file checks, row quality rules, states and scheduling.

Nothing in this package does IO beyond reading a profile's text handed to it.
"""

"""The rule language (SPEC section 7): grammar, parser, syntax tree, compiler, evaluator.

A pure library: no database, no UI, no clock of its own (time is passed in).
"""

"""Low-code dashboards (SPEC section 12): the spec, its validation and its JSON form."""

"""One router per resource; routes parse, call the store or a service, and answer."""

"""One router per API face."""

"""Wire schemas (pydantic), one module per API face."""

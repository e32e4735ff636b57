"""Library code behind the parameterised notebooks, one module per workflow."""

"""Who is calling and may they: bearer parsing, Entra validation, JWKS cache, Graph pre-authorization."""

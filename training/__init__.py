"""Dev-only training of the small diffusion models in hoshikage/trained (see docs/trained-models.md)."""

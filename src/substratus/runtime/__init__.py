"""A controller-runtime-style core on asyncio. Knows nothing about ML."""

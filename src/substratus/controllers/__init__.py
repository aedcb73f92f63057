"""Reconcilers for the four kinds. They read the cache, compute desired children with pure
functions, apply the difference and write status only when it changed; they know nothing
about HTTP or watch streams (that is ``substratus.runtime``)."""

"""Serving: bundles (`write_bundle`, `load_bundle`, `export_bundle`), the HTTP service
(`create_app`, `serve`) and the load tester (`run_loadtest`)."""

from recstack.serving.bundle import Bundle, BundleError, load_bundle, read_manifest, write_bundle

__all__ = ["Bundle", "BundleError", "load_bundle", "read_manifest", "write_bundle"]

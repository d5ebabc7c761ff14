"""islet-cds: CDS Hooks 2.0 / Da Vinci CRD service for pancreatic islet cell transplantation."""

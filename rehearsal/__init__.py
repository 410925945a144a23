"""The lab rehearsal: drives the lab and the production operations together (above both packages)."""

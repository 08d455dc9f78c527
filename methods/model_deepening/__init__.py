"""Model deepening methods of the review: embedding compression (BH, AMTL), and later APG and PCF-GNN."""

"""The MiMoPool operator: worker Deployments scaled from Prometheus with an HPA-style rule."""

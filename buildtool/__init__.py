"""Build matched DaskHub notebook and worker images from one locked solve."""

"""Containers: the runtime (podman/docker), the local base image and the stage image builds."""

"""Gaussian group ids: which part of the avatar a Gaussian belongs to (``GaussianAvatar.group``)."""

HEAD, MOUTH, TORSO = (
    0,
    1,
    2,
)  # head (follows the head pose), mouth interior (follows the jaw), torso (body frame)
GROUP_NAMES = ("head", "mouth", "torso")

__all__ = ["GROUP_NAMES", "HEAD", "MOUTH", "TORSO"]

"""``save_image`` is imported by ObSuRF's visualisation code, which the bench never runs."""


def save_image(*args, **kwargs):
    raise NotImplementedError("the bench's torchvision stand-in does not save images")

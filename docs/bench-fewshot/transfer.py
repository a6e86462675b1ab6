"""Does a meta-learned prior transfer between avatars? Usage: python docs/bench-fewshot/transfer.py OWN FOREIGN CAPTURE

OWN and FOREIGN are field avatars with a prior (e.g. two runs of `perennial bench fewshot`: out/avatars/base-meta);
prints the mean squared colour error of the first 8 batches of CAPTURE's training rays for a new appearance
starting from OWN's prior, from FOREIGN's prior (loaded into OWN), and fresh.
"""
import sys

import torch

from perennial.avatar.field_io import load_field_avatar
from perennial.avatar.store import AvatarStore
from perennial.capture import read_capture
from perennial.learn.field_method import training_rays
from perennial.learn.field_terms import Photometric
from perennial.learn.methods import preset

own_path, foreign_path, cap_path = sys.argv[1:4]
cap = read_capture(cap_path)

def first_loss(avatar, name, batches=8):
    pixels, _ = cap.read_split("train")
    term = Photometric(avatar, training_rays(cap, pixels, preset("field", "fast")), name, 2048, 16)
    state = term.init_state(0)
    tot = 0.0
    with torch.no_grad():
        for i in range(batches):
            losses, state = term(i, state)
            tot += float(losses["rgb"])
    return tot / batches

own, _, _ = load_field_avatar(AvatarStore(own_path))
foreign, _, _ = load_field_avatar(AvatarStore(foreign_path))
own.field.add_appearance("own-prior")
own.field.prior.load_state_dict(foreign.field.prior.state_dict())
own.field.add_appearance("foreign-prior")
own.field.prior = None
own.field.add_appearance("fresh")
for n in ("own-prior", "foreign-prior", "fresh"):
    print(n, "first-batch MSE", round(first_loss(own, n), 5), flush=True)

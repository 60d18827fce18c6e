"""Release profiles -> diskimage-builder -> a bootable appliance image and its manifest."""

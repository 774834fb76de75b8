"""Networks, losses (equations (1)-(19)) and label fusion of Qu et al., Sec. 2.3-2.7."""

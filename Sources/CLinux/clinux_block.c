#include "clinux_block.h"

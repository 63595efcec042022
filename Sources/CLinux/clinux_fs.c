#include "clinux_fs.h"

"""Scale-out: state shardings, compressed data-parallel means with error feedback."""

from gradtx.distributed.sharding import state_shardings as state_shardings

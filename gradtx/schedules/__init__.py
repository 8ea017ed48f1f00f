"""Schedules and batch size: linear decay, refined schedules, batch-size scaling rules, AdAdaGrad tests."""

from gradtx.schedules.adadagrad import adadagrad as adadagrad
from gradtx.schedules.adadagrad import adadagrad_norm as adadagrad_norm
from gradtx.schedules.adagrad import ScaleByAdagradNormState as ScaleByAdagradNormState
from gradtx.schedules.adagrad import ScaleByAdagradState as ScaleByAdagradState
from gradtx.schedules.adagrad import adagrad_norm as adagrad_norm
from gradtx.schedules.adagrad import scale_by_adagrad as scale_by_adagrad
from gradtx.schedules.adagrad import scale_by_adagrad_norm as scale_by_adagrad_norm
from gradtx.schedules.adaptive_batch_size import AdaptiveBatchSizeState as AdaptiveBatchSizeState
from gradtx.schedules.adaptive_batch_size import adaptive_batch_size as adaptive_batch_size
from gradtx.schedules.batch_scaling import rescale_learning_rate as rescale_learning_rate
from gradtx.schedules.batch_size_tests import BatchSizeTestResult as BatchSizeTestResult
from gradtx.schedules.batch_size_tests import coordinate_norm_test as coordinate_norm_test
from gradtx.schedules.batch_size_tests import inner_product_test as inner_product_test
from gradtx.schedules.batch_size_tests import next_batch_size as next_batch_size
from gradtx.schedules.batch_size_tests import norm_test as norm_test
from gradtx.schedules.batch_size_tests import orthogonality_test as orthogonality_test
from gradtx.schedules.grad_norms import RecordGradNormsState as RecordGradNormsState
from gradtx.schedules.grad_norms import record_grad_norms as record_grad_norms
from gradtx.schedules.grad_norms import recorded_grad_norms as recorded_grad_norms
from gradtx.schedules.linear_decay import linear_decay as linear_decay
from gradtx.schedules.refinement import refined_schedule as refined_schedule
from gradtx.schedules.refinement import refined_schedule_values as refined_schedule_values
from gradtx.schedules.refinement import smooth_grad_norms as smooth_grad_norms

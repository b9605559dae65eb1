//! f32 matrix products on `gemm`, the crate whose kernels burn's CPU matmul runs, for archlab's
//! own callers: the attention loop's per-block products (one thread: its units of work are
//! already parallel) and the CPU backend's 2-D matmuls (both threads: burn-flex hands a product
//! to more than one thread only from 192³ multiply-adds, so an MoE expert's hundred-odd tokens
//! ran on one core while the other waited; `gemm` splits from its own, lower threshold).

/// A matrix operand: `values[offset + i·row_stride + j·col_stride]` is element (i, j).
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    pub values: &'a [f32],
    pub offset: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Matrix<'a> {
    /// A row-major `[rows, cols]` matrix.
    pub fn rows(values: &'a [f32], cols: usize) -> Self {
        Self { values, offset: 0, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of a row-major `[cols, rows]` matrix, seen as `[rows, cols]`.
    pub fn transposed(values: &'a [f32], rows: usize) -> Self {
        Self { values, offset: 0, row_stride: 1, col_stride: rows }
    }

    /// Whether every element of a `[rows, cols]` view lies inside `values`.
    fn covers(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || self.offset + (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.values.len()
    }
}

/// `c = beta · a · b` (`a` `[m, k]`, `b` `[k, n]`, `c` row-major `[m, n]`), or `c += beta · a · b`
/// when `accumulate`; on all of rayon's threads when `parallel`.
///
/// # Panics
/// If an operand is too short for its view.
pub fn matmul_into(
    c: &mut [f32],
    a: Matrix,
    b: Matrix,
    (m, n, k): (usize, usize, usize),
    beta: f32,
    accumulate: bool,
    parallel: bool,
) {
    assert!(
        c.len() >= m * n && a.covers(m, k) && b.covers(k, n),
        "matmul operands too short for their views"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    let parallelism = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: `covers` checked that every element the offsets and strides reach is in bounds,
    // and `c` holds `m · n` values.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.values.as_ptr().add(a.offset),
            a.col_stride as isize,
            a.row_stride as isize,
            b.values.as_ptr().add(b.offset),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            beta,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `a · b` as a new row-major `[m, n]`, on all of rayon's threads.
pub fn matmul(a: Matrix, b: Matrix, (m, n, k): (usize, usize, usize)) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    matmul_into(&mut c, a, b, (m, n, k), 1.0, false, true);
    c
}

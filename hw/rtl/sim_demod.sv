// SPDX-License-Identifier: Apache-2.0
// SIM demodulation kernel: 9 raw-frame codes -> c0, Re z, Im z per angle, one pixel/clock.
`default_nettype none

// The bit-exact hardware of demodulate_int (microscope/sim_linear.py): that Python function
// is the specification, hw/demod_kernel.py packs its numbers into stream words. For camera
// pixel (y, x) of a tile and angle a, whose frames u0, u1, u2 are input channels 3a..3a+2:
//
//   phase = phase0[a] + x*step_x[a] + y*step_y[a]  (mod 2**32; accumulators, no multiply)
//   i     = ((phase + 2**21) >> 22) & 1023          (nearest entry of the sine table)
//   k     = (i + 256) & 1023                         (the cosine: a quarter turn later)
//   A     = 2*u0 - u1 - u2,   B = u2 - u1
//   s     = (u0 + u1 + u2 - 3*in_zero) * 2**14
//   zr    = A*SIN[k] + B*SIN3[i]
//   zi    = B*SIN3[k] - A*SIN[i]
//   c0    = sat(((s  * gain_s    + 2**29) >>> 30) + wide_zero)   -> output channel 3a
//   Re z  = sat(((zr * gain_z[a] + 2**29) >>> 30) + 128)         -> output channel 3a+1
//   Im z  = sat(((zi * gain_z[a] + 2**29) >>> 30) + 128)         -> output channel 3a+2
//
// SIN, SIN3 are sine_tables() (round(2**14 sin), round(2**14 sqrt(3) sin), 1024 entries,
// signed 16 bits), included from sim_demod_tables.svh, which hw/demod_kernel.py writes from
// the Python tables into the build directory. >>> is the floor shift of the signed product
// (round half up); sat() clips to 0..255 and counts each clipped value. Every intermediate
// value is exact for all codes and registers (widths below), so the result is bit-exact.
//
// Streams (AXI4-Stream, one pixel a beat):
//   s_axis      72 bits: the input code of frame c (angle-major: 3*angle + phase step) in
//               bits [8c+7:8c]. TLAST marks the last pixel of a tile.
//   m_axis      72 bits: output channel c (3a: c0, 3a+1: Re z, 3a+2: Im z of angle a) in
//               bits [8c+7:8c]; TLAST = the pixel's s_axis TLAST.
//   s_axis_cfg  32-bit words, the registers of a tile (DemodRegisters): for a = 0, 1, 2:
//               phase0[a], step_x[a], step_y[a], gain_z[a]; then gain_s;
//               in_zero | wide_zero << 8; the tile width W in pixels (>= 1). 15 words,
//               TLAST on the last; bits above 18 (gains) and 16 (zeros) are ignored.
//   sat_count   clipped channel values of the current tile's pixels that have left m_axis;
//               restarts with the first pixel of each tile (the first one after a load or
//               a reset takes effect), so after a tile's TLAST beat it holds that tile's
//               count until the next tile's first beat leaves.
//   cfg_rejects malformed loads rejected since the last reset (saturates at 65535).
//
// Tiles and loads. Pixels run through the tile row-major, W pixels per row; the position
// restarts at (0, 0) only when a load takes effect (or at a reset), not at TLAST.
//   * A load is complete with its 15th word if that word has TLAST and W != 0. It then
//     waits in a staging buffer (s_axis_cfg_tready low meanwhile) and takes effect at the
//     next tile boundary: at once if the kernel is waiting for a load, else together with
//     the current tile's TLAST pixel, so the next tile's load can be sent while the current
//     tile streams and tiles follow each other without a gap.
//   * After a pixel with TLAST, and after power-up, no pixel is accepted until a load takes
//     effect: every tile has its own load. Pixels already inside finish with the registers
//     they entered with (the registers travel with them down the pipeline).
//   * A malformed load is rejected and counted: it ends at the first word with TLAST, and
//     a load of fewer or more than 15 words, or with W == 0, changes nothing (words past
//     the 15th are dropped). The word after its TLAST starts a new load.
//   * ap_rst_n (active low) flushes the pixels in flight and any partial or waiting load,
//     clears sat_count and cfg_rejects, and keeps the registers in effect with their tile
//     restarted at (0, 0): pixels sent after a reset use them (once any load has ever taken
//     effect), unless a load completes before the first pixel is accepted, which then
//     replaces them.
// Latency 8 clocks from s_axis to m_axis (register slices at both ends, 6 stages between);
// one pixel per clock without backpressure.
module sim_demod (
    input  wire         ap_clk,
    input  wire         ap_rst_n,

    input  wire  [31:0] s_axis_cfg_tdata,
    input  wire         s_axis_cfg_tvalid,
    output logic        s_axis_cfg_tready,
    input  wire         s_axis_cfg_tlast,

    input  wire  [71:0] s_axis_tdata,
    input  wire         s_axis_tvalid,
    output logic        s_axis_tready,
    input  wire         s_axis_tlast,

    output logic [71:0] m_axis_tdata,
    output logic        m_axis_tvalid,
    input  wire         m_axis_tready,
    output logic        m_axis_tlast,

    output logic [31:0] sat_count,
    output logic [15:0] cfg_rejects
);

    localparam int ANGLES = 3;                      // pattern angles, 3 phase steps each
    localparam int CHANNELS = 3 * ANGLES;           // input frames = output channels
    localparam int CODE_BITS = 8;                   // input and output code width
    localparam int TDATA_W = CHANNELS * CODE_BITS;  // s_axis / m_axis TDATA width
    localparam int PHASE_BITS = 32;                 // phase accumulator: 2**32 = one turn
    localparam int TABLE_BITS = 10;                 // sine table address width
    localparam int ENTRY_BITS = 16;                 // signed sine table entry width
    localparam int TABLE_SHIFT = 14;                // sine table scale 2**14
    localparam int GAIN_BITS = 18;                  // unsigned gain width
    localparam int GAIN_SHIFT = 30;                 // requantization shift
    localparam int CHANNEL_ZERO = 128;              // zero point of Re z, Im z
    localparam int CFG_WORDS = 4 * ANGLES + 3;      // words of one load
    localparam int W_GAIN_S = 4 * ANGLES;           // load word: gain_s
    localparam int W_ZEROS = W_GAIN_S + 1;          // load word: in_zero | wide_zero << 8
    localparam int W_WIDTH = W_ZEROS + 1;           // load word: tile width
    localparam int STAGES = 6;                      // pipeline stages between the slices
    localparam int CNT_BITS = $clog2(CFG_WORDS + 1);         // load word counter width
    localparam int A_W = CODE_BITS + 3;             // 2*u0 - u1 - u2 (|.| <= 510)
    localparam int B_W = CODE_BITS + 2;             // u2 - u1 (|.| <= 255)
    localparam int S_W = CODE_BITS + 4;             // u0 + u1 + u2 - 3*in_zero (|.| <= 765)
    localparam int ACC_W = A_W + ENTRY_BITS + 1;    // s, zr, zi (|.| < 2**24)
    localparam int PROD_W = ACC_W + GAIN_BITS + 1;  // acc * gain
    localparam int Q_W = PROD_W - GAIN_SHIFT + 2;   // requantized value plus zero point
    localparam int NSAT_BITS = $clog2(CHANNELS + 1);         // clipped values per pixel
    localparam logic [CNT_BITS-1:0] CNT_LAST = CNT_BITS'(CFG_WORDS - 1);  // 15th word
    localparam logic [CNT_BITS-1:0] CNT_OVER = CNT_BITS'(CFG_WORDS);      // too many words
    localparam logic [PHASE_BITS-1:0] PHASE_HALF = PHASE_BITS'(1) << (PHASE_BITS - TABLE_BITS - 1);
    localparam logic [TABLE_BITS-1:0] QUARTER = TABLE_BITS'(1) << (TABLE_BITS - 2);
    localparam logic signed [PROD_W-1:0] ROUND = PROD_W'(1) << (GAIN_SHIFT - 1);
    localparam logic [CODE_BITS-1:0] BAND_ZERO = CODE_BITS'(CHANNEL_ZERO);

    // sin_rom, sin3_rom: the two tables (ROMs: set by an initial block, never written)
    `include "sim_demod_tables.svh"

    function automatic logic [NSAT_BITS-1:0] count_ones(input logic [CHANNELS-1:0] bits);
        count_ones = '0;
        for (int i = 0; i < CHANNELS; i++) begin
            count_ones = count_ones + NSAT_BITS'(bits[i]);
        end
    endfunction

    // ---------------------------------------------------------------- loads
    logic [31:0]         stage_word [CFG_WORDS];  // the load being received / waiting
    logic [CNT_BITS-1:0] cfg_count;               // its words so far (CNT_OVER: too many)
    logic                staged;                  // a complete load waits in stage_word
    logic                cfg_live;                // out of reset
    logic                commit;                  // the staged load takes effect now

    assign s_axis_cfg_tready = cfg_live && !staged;
    wire cfg_take = s_axis_cfg_tvalid && s_axis_cfg_tready;
    wire cfg_end  = cfg_take && s_axis_cfg_tlast;
    wire cfg_good = cfg_count == CNT_LAST && s_axis_cfg_tdata != '0;  // 15 words, W >= 1

    always_ff @(posedge ap_clk) begin
        if (!ap_rst_n) begin
            cfg_live    <= 1'b0;
            cfg_count   <= '0;
            staged      <= 1'b0;
            cfg_rejects <= '0;
        end else begin
            cfg_live <= 1'b1;
            if (commit) begin
                staged <= 1'b0;
            end
            if (cfg_end) begin
                cfg_count <= '0;
                staged    <= cfg_good;
                if (!cfg_good && cfg_rejects != '1) begin
                    cfg_rejects <= cfg_rejects + 1'b1;
                end
            end else if (cfg_take && cfg_count != CNT_OVER) begin
                cfg_count <= cfg_count + 1'b1;
            end
        end
    end

    always_ff @(posedge ap_clk) begin
        if (cfg_take && cfg_count != CNT_OVER) begin
            stage_word[cfg_count] <= s_axis_cfg_tdata;
        end
    end

    // registers in effect (no reset: a reset keeps them)
    logic [PHASE_BITS-1:0] phase0_r [ANGLES];
    logic [PHASE_BITS-1:0] step_x_r [ANGLES];
    logic [PHASE_BITS-1:0] step_y_r [ANGLES];
    logic [GAIN_BITS-1:0]  gain_z_r [ANGLES];
    logic [GAIN_BITS-1:0]  gain_s_r;
    logic [CODE_BITS-1:0]  in_zero_r, wide_zero_r;
    logic [31:0]           last_col_r;  // W - 1

    always_ff @(posedge ap_clk) begin
        if (commit) begin
            for (int a = 0; a < ANGLES; a++) begin
                phase0_r[a] <= stage_word[4 * a];
                step_x_r[a] <= stage_word[4 * a + 1];
                step_y_r[a] <= stage_word[4 * a + 2];
                gain_z_r[a] <= stage_word[4 * a + 3][GAIN_BITS-1:0];
            end
            gain_s_r    <= stage_word[W_GAIN_S][GAIN_BITS-1:0];
            in_zero_r   <= stage_word[W_ZEROS][CODE_BITS-1:0];
            wide_zero_r <= stage_word[W_ZEROS][2*CODE_BITS-1:CODE_BITS];
            last_col_r  <= stage_word[W_WIDTH] - 1'b1;
        end
    end

    // a load has taken effect since the FPGA was configured: a power-up value, not reset
    /* verilator lint_off PROCASSINIT */
    logic loaded = 1'b0;
    /* verilator lint_on PROCASSINIT */

    always_ff @(posedge ap_clk) begin
        if (commit) begin
            loaded <= 1'b1;
        end
    end

    // ---------------------------------------------------------------- input slice
    logic [TDATA_W:0] in_data;  // {tlast, codes}
    logic             in_valid, in_ready;

    axis_skid_buffer #(.WIDTH(TDATA_W + 1)) u_in (
        .ap_clk, .ap_rst_n,
        .s_axis_tdata({s_axis_tlast, s_axis_tdata}), .s_axis_tvalid, .s_axis_tready,
        .m_axis_tdata(in_data), .m_axis_tvalid(in_valid), .m_axis_tready(in_ready)
    );

    // ---------------------------------------------------------------- tile position
    // One clock enable for all stages: the pipeline moves unless its last stage holds a
    // pixel that the output slice cannot take (the slice's tready is a register).
    logic [STAGES:1] valid_p, last_p, first_p;  // per stage: pixel, its TLAST, tile start
    logic            out_ready;
    logic            need_load;   // waiting for a load: no pixel accepted
    logic            kept;        // registers kept by a reset, no pixel yet: a load replaces them
    logic            tile_start;  // the next pixel accepted is its tile's first
    logic [31:0]     col;         // column of the next pixel accepted
    logic [PHASE_BITS-1:0] phase [ANGLES];      // phase of the next pixel accepted
    logic [PHASE_BITS-1:0] row_phase [ANGLES];  // phase at column 0 of its row

    wire ce      = !valid_p[STAGES] || out_ready;
    assign in_ready = ce && !need_load;
    wire take    = in_valid && in_ready;
    wire in_last = in_data[TDATA_W];
    wire row_end = col == last_col_r;
    assign commit = ap_rst_n && staged && (take ? in_last : (need_load || kept));

    always_ff @(posedge ap_clk) begin
        if (!ap_rst_n) begin
            need_load  <= !loaded;
            kept       <= 1'b1;
            tile_start <= 1'b1;
            col        <= '0;
            for (int a = 0; a < ANGLES; a++) begin
                phase[a]     <= phase0_r[a];
                row_phase[a] <= phase0_r[a];
            end
        end else if (commit) begin
            need_load  <= 1'b0;
            kept       <= 1'b0;
            tile_start <= 1'b1;
            col        <= '0;
            for (int a = 0; a < ANGLES; a++) begin
                phase[a]     <= stage_word[4 * a];
                row_phase[a] <= stage_word[4 * a];
            end
        end else if (take) begin
            need_load  <= in_last;
            kept       <= 1'b0;
            tile_start <= 1'b0;
            col        <= row_end ? '0 : col + 1'b1;
            for (int a = 0; a < ANGLES; a++) begin
                if (row_end) begin
                    phase[a]     <= row_phase[a] + step_y_r[a];
                    row_phase[a] <= row_phase[a] + step_y_r[a];
                end else begin
                    phase[a] <= phase[a] + step_x_r[a];
                end
            end
        end
    end

    // ---------------------------------------------------------------- pipeline control
    // stage 1: codes -> A, B, s code, table addresses; 2: table reads; 3: products;
    // 4: sums; 5: times the gains; 6: rounding, zero point. Registers the later stages
    // need travel with the pixel.
    logic [GAIN_BITS-1:0] gain_s_p [1:4];
    logic [CODE_BITS-1:0] wide_zero_p [1:5];

    always_ff @(posedge ap_clk) begin
        if (!ap_rst_n) begin
            valid_p <= '0;
        end else if (ce) begin
            valid_p <= {valid_p[STAGES-1:1], take};
        end
    end

    always_ff @(posedge ap_clk) begin
        if (ce) begin
            last_p  <= {last_p[STAGES-1:1], in_last};
            first_p <= {first_p[STAGES-1:1], tile_start};
            gain_s_p[1]    <= gain_s_r;
            wide_zero_p[1] <= wide_zero_r;
            for (int i = 2; i <= 4; i++) begin
                gain_s_p[i] <= gain_s_p[i - 1];
            end
            for (int i = 2; i <= 5; i++) begin
                wide_zero_p[i] <= wide_zero_p[i - 1];
            end
        end
    end

    // ---------------------------------------------------------------- per angle: s, zr, zi
    wire [CHANNELS*ACC_W-1:0]     acc4;   // stage 4: s, zr, zi of each angle
    wire [CHANNELS*GAIN_BITS-1:0] gain4;  // stage 4: the gain of each channel

    for (genvar a = 0; a < ANGLES; a++) begin : g_angle
        wire [CODE_BITS-1:0]   u0 = in_data[(3 * a) * CODE_BITS +: CODE_BITS];
        wire [CODE_BITS-1:0]   u1 = in_data[(3 * a + 1) * CODE_BITS +: CODE_BITS];
        wire [CODE_BITS-1:0]   u2 = in_data[(3 * a + 2) * CODE_BITS +: CODE_BITS];
        // two's complement at the declared widths (the values fit)
        wire signed [A_W-1:0]  big_a0 = A_W'(u0) + A_W'(u0) - A_W'(u1) - A_W'(u2);
        wire signed [B_W-1:0]  big_b0 = B_W'(u2) - B_W'(u1);
        wire signed [S_W-1:0]  s_code0 = S_W'(u0) + S_W'(u1) + S_W'(u2)
                                       - S_W'(3) * S_W'(in_zero_r);
        wire [TABLE_BITS-1:0]  idx0 = TABLE_BITS'((phase[a] + PHASE_HALF)
                                                  >> (PHASE_BITS - TABLE_BITS));
        wire [TABLE_BITS-1:0]  cos0 = idx0 + QUARTER;

        logic [TABLE_BITS-1:0]        idx1, cos1;
        logic signed [A_W-1:0]        big_a1, big_a2;
        logic signed [B_W-1:0]        big_b1, big_b2;
        logic signed [S_W-1:0]        s_code1, s_code2;
        logic signed [ENTRY_BITS-1:0] sin_i2, sin_k2, sin3_i2, sin3_k2;
        logic signed [ACC_W-1:0]      a_cos3, b_sin3, b_cos3, a_sin3, s3;
        logic signed [ACC_W-1:0]      s4, zr4, zi4;
        logic [GAIN_BITS-1:0]         gain_z1, gain_z2, gain_z3, gain_z4;

        always_ff @(posedge ap_clk) begin
            if (ce) begin
                idx1    <= idx0;
                cos1    <= cos0;
                big_a1  <= big_a0;
                big_b1  <= big_b0;
                s_code1 <= s_code0;
                gain_z1 <= gain_z_r[a];
                // stage 2: the tables (ROMs with a read enable)
                sin_i2  <= sin_rom[idx1];
                sin_k2  <= sin_rom[cos1];
                sin3_i2 <= sin3_rom[idx1];
                sin3_k2 <= sin3_rom[cos1];
                big_a2  <= big_a1;
                big_b2  <= big_b1;
                s_code2 <= s_code1;
                gain_z2 <= gain_z1;
                // stage 3: products
                a_cos3  <= ACC_W'(big_a2) * ACC_W'(sin_k2);
                b_sin3  <= ACC_W'(big_b2) * ACC_W'(sin3_i2);
                b_cos3  <= ACC_W'(big_b2) * ACC_W'(sin3_k2);
                a_sin3  <= ACC_W'(big_a2) * ACC_W'(sin_i2);
                s3      <= ACC_W'(s_code2) <<< TABLE_SHIFT;
                gain_z3 <= gain_z2;
                // stage 4: sums
                zr4     <= a_cos3 + b_sin3;
                zi4     <= b_cos3 - a_sin3;
                s4      <= s3;
                gain_z4 <= gain_z3;
            end
        end

        assign acc4[(3 * a) * ACC_W +: 3 * ACC_W]         = {zi4, zr4, s4};
        assign gain4[(3 * a) * GAIN_BITS +: 3 * GAIN_BITS] = {gain_z4, gain_z4, gain_s_p[4]};
    end

    // ---------------------------------------------------------------- per channel
    wire [TDATA_W-1:0]  code6;  // stage 6, clipped
    wire [CHANNELS-1:0] sat6;   // stage 6, clipped at 0 or 255

    for (genvar c = 0; c < CHANNELS; c++) begin : g_channel
        wire signed [ACC_W-1:0] acc     = acc4[c * ACC_W +: ACC_W];
        wire [GAIN_BITS-1:0]    gain    = gain4[c * GAIN_BITS +: GAIN_BITS];
        wire [CODE_BITS-1:0]    zero5   = c % 3 == 0 ? wide_zero_p[5] : BAND_ZERO;
        logic signed [PROD_W-1:0] prod5;
        logic signed [Q_W-1:0]    q6;

        always_ff @(posedge ap_clk) begin
            if (ce) begin
                prod5 <= PROD_W'(acc) * PROD_W'(gain);                  // stage 5
                q6    <= Q_W'((prod5 + ROUND) >>> GAIN_SHIFT) + Q_W'(zero5);  // stage 6
            end
        end

        wire low  = q6[Q_W-1];
        wire high = !low && q6[Q_W-2:CODE_BITS] != '0;
        assign sat6[c] = low || high;
        assign code6[c * CODE_BITS +: CODE_BITS] = low ? '0 : (high ? '1 : q6[CODE_BITS-1:0]);
    end

    // ---------------------------------------------------------------- output slice
    logic [TDATA_W+NSAT_BITS+1:0] out_q;  // {clipped count, tile start, tlast, codes}

    axis_skid_buffer #(.WIDTH(TDATA_W + NSAT_BITS + 2)) u_out (
        .ap_clk, .ap_rst_n,
        .s_axis_tdata({count_ones(sat6), first_p[STAGES], last_p[STAGES], code6}),
        .s_axis_tvalid(valid_p[STAGES]), .s_axis_tready(out_ready),
        .m_axis_tdata(out_q), .m_axis_tvalid, .m_axis_tready
    );

    assign m_axis_tdata = out_q[TDATA_W-1:0];
    assign m_axis_tlast = out_q[TDATA_W];
    wire                 out_first = out_q[TDATA_W+1];
    wire [NSAT_BITS-1:0] out_sat   = out_q[TDATA_W+2 +: NSAT_BITS];

    always_ff @(posedge ap_clk) begin
        if (!ap_rst_n) begin
            sat_count <= '0;
        end else if (m_axis_tvalid && m_axis_tready) begin
            sat_count <= (out_first ? '0 : sat_count) + 32'(out_sat);
        end
    end

endmodule

`default_nettype wire

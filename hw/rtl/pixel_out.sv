// SPDX-License-Identifier: Apache-2.0
// Pixel-out kernel: residual code + bypass -> restored pixel by a run-time table, one pixel/clock.
`default_nettype none

// Per pixel, from the network's residual code r (s_axis) and pixel_in's bypass word
// (s_axis_bypass, same layout as pixel_in's m_axis_bypass: adu, q, saturated, above):
//
//   c   = clip(RATIO*q + ZERO - r, 0, 2**C_BITS - 1)        (SignalSpec.combine)
//   out = adu converted to the table's format   if saturated or above range
//         OUT_LUT[c]                            otherwise
//
// OUT_FLOAT = 1: table entries are IEEE float32 ADU (DATA_BITS = 32) and a passed-through
//   adu is converted to float32 (exact: IN_BITS <= 24).
// OUT_FLOAT = 0: table entries are unsigned integers of DATA_BITS (e.g. rounded uint16
//   ADU) and a passed-through adu is zero-extended (DATA_BITS >= IN_BITS).
//
//   m_axis       out (DATA_BITS, zero-padded to bytes); TLAST = the bypass word's TLAST.
//   s_axis_lut   the table, 2**C_BITS entries from entry 0, TLAST on the last one (see
//                stream_lut). While a load is incomplete no new pixel is accepted.
// The two inputs are joined: a pixel enters when both have a beat. Latency 4 clocks plus
// the register slices; ap_rst_n flushes the pixels in flight, the table survives.
module pixel_out #(
    parameter int IN_BITS = 16,   // ADU pixel width in the bypass word, bits
    parameter int CODE_BITS = 8,  // input code width q, bits
    parameter int OUT_BITS = 8,   // residual code width r (the network's output), bits
    parameter int RATIO = 8,      // residual codes per input code (in_step / residual_step)
    parameter int ZERO = 128,     // residual code meaning "no noise"
    parameter int C_BITS = 12,    // clean code width: the table has 2**C_BITS entries
    parameter int DATA_BITS = 32, // output word (table entry) width, bits
    parameter int OUT_FLOAT = 1,  // 1: float32 table and pass-through; 0: unsigned integers
    localparam int R_W = (OUT_BITS + 7) / 8 * 8,                      // s_axis_tdata width
    localparam int BYPASS_BITS = IN_BITS + CODE_BITS + 2,             // bypass word bits
    localparam int BYPASS_W = (BYPASS_BITS + 7) / 8 * 8,              // s_axis_bypass_tdata width
    localparam int DATA_W = (DATA_BITS + 7) / 8 * 8                   // m_axis / s_axis_lut width
) (
    input  wire                 ap_clk,
    input  wire                 ap_rst_n,

    input  wire  [R_W-1:0]      s_axis_tdata,
    input  wire                 s_axis_tvalid,
    output logic                s_axis_tready,

    input  wire  [BYPASS_W-1:0] s_axis_bypass_tdata,
    input  wire                 s_axis_bypass_tvalid,
    output logic                s_axis_bypass_tready,
    input  wire                 s_axis_bypass_tlast,

    input  wire  [DATA_W-1:0]   s_axis_lut_tdata,
    input  wire                 s_axis_lut_tvalid,
    output logic                s_axis_lut_tready,
    input  wire                 s_axis_lut_tlast,

    output logic [DATA_W-1:0]   m_axis_tdata,
    output logic                m_axis_tvalid,
    input  wire                 m_axis_tready,
    output logic                m_axis_tlast
);

    localparam int POS_MAX = RATIO * (2 ** CODE_BITS - 1) + ZERO;       // largest RATIO*q+ZERO
    localparam int S_BITS = $clog2(POS_MAX + 1) > C_BITS ? $clog2(POS_MAX + 1) : C_BITS;
    localparam logic [S_BITS-1:0] RATIO_S = S_BITS'(RATIO);             // operands at S_BITS
    localparam logic [S_BITS-1:0] ZERO_S = S_BITS'(ZERO);
    localparam logic [S_BITS-1:0] C_MAX_S = S_BITS'(2 ** C_BITS - 1);   // top clean code

    if (OUT_FLOAT != 0 && (DATA_BITS != 32 || IN_BITS > 24)) begin : g_bad_float
        initial $fatal(1, "pixel_out: OUT_FLOAT needs DATA_BITS=32 and IN_BITS<=24");
    end
    if (OUT_FLOAT == 0 && DATA_BITS < IN_BITS) begin : g_bad_int
        initial $fatal(1, "pixel_out: DATA_BITS=%0d cannot hold IN_BITS=%0d", DATA_BITS, IN_BITS);
    end

    // IEEE float32 of an unsigned integer of IN_BITS <= 24 bits (exact).
    function automatic logic [31:0] to_float32(input logic [IN_BITS-1:0] x);
        logic [IN_BITS-1:0] frac;
        logic [22:0]        mantissa;
        logic [7:0]         exponent;
        int                 msb;
        msb = 0;
        for (int i = 0; i < IN_BITS; i++) begin
            if (x[i]) msb = i;
        end
        frac     = x << (IN_BITS - msb);  // the bits below the leading one, left-aligned
        mantissa = 23'({frac, 23'b0} >> IN_BITS);
        exponent = 8'(127 + msb);
        return x == '0 ? 32'd0 : {1'b0, exponent, mantissa};
    endfunction

    // ---------------------------------------------------------------- input slices
    logic [OUT_BITS-1:0]    r0;
    logic [BYPASS_BITS:0]   byp0;  // {tlast, word}
    logic                   r_valid, r_ready, byp_valid, byp_ready;

    axis_skid_buffer #(.WIDTH(OUT_BITS)) u_r (
        .ap_clk, .ap_rst_n,
        .s_axis_tdata(s_axis_tdata[OUT_BITS-1:0]), .s_axis_tvalid, .s_axis_tready,
        .m_axis_tdata(r0), .m_axis_tvalid(r_valid), .m_axis_tready(r_ready)
    );

    axis_skid_buffer #(.WIDTH(BYPASS_BITS + 1)) u_bypass (
        .ap_clk, .ap_rst_n,
        .s_axis_tdata({s_axis_bypass_tlast, s_axis_bypass_tdata[BYPASS_BITS-1:0]}),
        .s_axis_tvalid(s_axis_bypass_tvalid), .s_axis_tready(s_axis_bypass_tready),
        .m_axis_tdata(byp0), .m_axis_tvalid(byp_valid), .m_axis_tready(byp_ready)
    );

    // ---------------------------------------------------------------- table
    logic              loading;
    logic [C_BITS-1:0] c1;
    logic [DATA_BITS-1:0] entry2;
    logic              ce;

    stream_lut #(.WIDTH(DATA_BITS), .DEPTH(2 ** C_BITS)) u_lut (
        .ap_clk, .ap_rst_n,
        .s_axis_tdata(s_axis_lut_tdata), .s_axis_tvalid(s_axis_lut_tvalid),
        .s_axis_tready(s_axis_lut_tready), .s_axis_tlast(s_axis_lut_tlast),
        .loading,
        .rd_en(ce), .rd_addr(c1), .rd_data(entry2)
    );

    // ---------------------------------------------------------------- pipeline
    logic v1, v2, v3;
    logic out_ready;

    assign ce        = !v3 || out_ready;
    wire   accept    = ce && !loading;
    assign r_ready   = accept && byp_valid;
    assign byp_ready = accept && r_valid;
    wire   take      = accept && r_valid && byp_valid;

    always_ff @(posedge ap_clk) begin
        if (!ap_rst_n) begin
            v1 <= 1'b0;
            v2 <= 1'b0;
            v3 <= 1'b0;
        end else if (ce) begin
            v1 <= take;
            v2 <= v1;
            v3 <= v2;
        end
    end

    // stage 0 (combinational): the clean code
    wire [IN_BITS-1:0]   adu0  = byp0[IN_BITS-1:0];
    wire [CODE_BITS-1:0] q0    = byp0[IN_BITS +: CODE_BITS];
    wire                 pass0 = byp0[IN_BITS + CODE_BITS] || byp0[IN_BITS + CODE_BITS + 1];
    wire [S_BITS-1:0]    pos0  = S_BITS'(q0) * RATIO_S + ZERO_S;
    wire [S_BITS-1:0]    r0_s  = S_BITS'(r0);
    wire [S_BITS-1:0]    diff0 = pos0 - r0_s;
    logic [C_BITS-1:0]   c0;

    if (S_BITS > C_BITS) begin : g_clip_high
        assign c0 = r0_s > pos0 ? '0 : (diff0 > C_MAX_S ? '1 : C_BITS'(diff0));
    end else begin : g_clip_low  // RATIO*q + ZERO never exceeds the top clean code
        assign c0 = r0_s > pos0 ? '0 : C_BITS'(diff0);
    end

    logic [IN_BITS-1:0]   adu1;
    logic                 pass1, pass2, pass3;
    logic                 last1, last2, last3;
    logic [DATA_BITS-1:0] raw2, raw3, entry3;

    always_ff @(posedge ap_clk) begin
        if (ce) begin
            c1     <= c0;
            adu1   <= adu0;
            pass1  <= pass0;
            last1  <= byp0[BYPASS_BITS];
            raw2   <= OUT_FLOAT != 0 ? DATA_BITS'(to_float32(adu1)) : DATA_BITS'(adu1);
            pass2  <= pass1;             // stage 2: table read (entry2)
            last2  <= last1;
            entry3 <= entry2;            // stage 3: the block RAM's output register
            raw3   <= raw2;
            pass3  <= pass2;
            last3  <= last2;
        end
    end

    // ---------------------------------------------------------------- output slice
    logic [DATA_BITS:0] out_q;  // {tlast, data}

    axis_skid_buffer #(.WIDTH(DATA_BITS + 1)) u_out (
        .ap_clk, .ap_rst_n,
        .s_axis_tdata({last3, pass3 ? raw3 : entry3}), .s_axis_tvalid(v3),
        .s_axis_tready(out_ready),
        .m_axis_tdata(out_q), .m_axis_tvalid, .m_axis_tready
    );

    assign m_axis_tdata = DATA_W'(out_q[DATA_BITS-1:0]);
    assign m_axis_tlast = out_q[DATA_BITS];

    if (R_W > OUT_BITS) begin : g_unused_r_pad
        wire unused_r_pad = &{1'b0, s_axis_tdata[R_W-1:OUT_BITS]};
    end
    if (BYPASS_W > BYPASS_BITS) begin : g_unused_bypass_pad
        wire unused_bypass_pad = &{1'b0, s_axis_bypass_tdata[BYPASS_W-1:BYPASS_BITS]};
    end

endmodule

`default_nettype wire

// SPDX-License-Identifier: Apache-2.0
// Pixel-in kernel: camera ADU -> network input code by a run-time table, one pixel/clock.
`default_nettype none

// Per pixel `adu` (IN_BITS unsigned): entry = LUT[min(adu, ADC_MAX)], where each table
// entry is {saturated, code} (bit CODE_BITS = saturated, bits CODE_BITS-1:0 = code).
//
//   m_axis         code (CODE_BITS, zero-padded to bytes): the network's input stream.
//   m_axis_bypass  what pixel_out needs, zero-padded to bytes, TLAST = s_axis_tlast:
//                    [IN_BITS-1:0]                  adu (the raw pixel)
//                    [IN_BITS+CODE_BITS-1:IN_BITS]  code q
//                    [IN_BITS+CODE_BITS]            saturated: the table's flag
//                                                   (host sets it for adu >= adc_max)
//                    [IN_BITS+CODE_BITS+1]          above range: code == 2**CODE_BITS-1
//                                                   and not saturated
//                  pixel_out passes a pixel through unchanged when either flag is set.
//   s_axis_lut     the table, ADC_MAX+1 entries from entry 0, TLAST on the last one
//                  (see stream_lut); each beat's low CODE_BITS+1 bits are one entry.
//                  While a load is incomplete no new pixel is accepted; pixels already
//                  inside the kernel may see either table, so load between frames.
//                  The host writes its camera's adc_max into the saturated flags, so one
//                  bitstream serves any camera with adc_max <= ADC_MAX.
// Both outputs advance together (a pixel leaves when both have room). Latency 4 clocks
// plus the register slices; ap_rst_n flushes the pixels in flight, the table survives.
module pixel_in #(
    parameter int IN_BITS = 16,    // ADU pixel width, bits
    parameter int CODE_BITS = 8,   // network input code width, bits
    parameter int ADC_MAX = 65535, // largest ADU with its own table entry (table depth - 1)
    localparam int IN_W = (IN_BITS + 7) / 8 * 8,                      // s_axis_tdata width
    localparam int CODE_W = (CODE_BITS + 7) / 8 * 8,                  // m_axis_tdata width
    localparam int LUT_BITS = CODE_BITS + 1,                          // table entry bits
    localparam int LUT_W = (LUT_BITS + 7) / 8 * 8,                    // s_axis_lut_tdata width
    localparam int BYPASS_BITS = IN_BITS + CODE_BITS + 2,             // bypass word bits
    localparam int BYPASS_W = (BYPASS_BITS + 7) / 8 * 8               // m_axis_bypass_tdata width
) (
    input  wire                 ap_clk,
    input  wire                 ap_rst_n,

    input  wire  [IN_W-1:0]     s_axis_tdata,
    input  wire                 s_axis_tvalid,
    output logic                s_axis_tready,
    input  wire                 s_axis_tlast,

    input  wire  [LUT_W-1:0]    s_axis_lut_tdata,
    input  wire                 s_axis_lut_tvalid,
    output logic                s_axis_lut_tready,
    input  wire                 s_axis_lut_tlast,

    output logic [CODE_W-1:0]   m_axis_tdata,
    output logic                m_axis_tvalid,
    input  wire                 m_axis_tready,

    output logic [BYPASS_W-1:0] m_axis_bypass_tdata,
    output logic                m_axis_bypass_tvalid,
    input  wire                 m_axis_bypass_tready,
    output logic                m_axis_bypass_tlast
);

    localparam int DEPTH = ADC_MAX + 1;                            // table entries
    localparam int ADDR_BITS = DEPTH > 1 ? $clog2(DEPTH) : 1;      // table address width
    localparam logic [IN_BITS-1:0] ADC_MAX_ADU = IN_BITS'(ADC_MAX); // clamp value
    localparam logic [CODE_BITS-1:0] TOP_CODE = '1;                // above-range code

    if (ADC_MAX < 1 || ADC_MAX > 2 ** IN_BITS - 1) begin : g_bad_adc_max
        initial $fatal(1, "pixel_in: ADC_MAX=%0d must be in 1..2**IN_BITS-1", ADC_MAX);
    end

    // ---------------------------------------------------------------- input slice
    logic [IN_BITS:0] in_data;  // {tlast, adu}
    logic             in_valid, in_ready;

    axis_skid_buffer #(.WIDTH(IN_BITS + 1)) u_in (
        .ap_clk, .ap_rst_n,
        .s_axis_tdata({s_axis_tlast, s_axis_tdata[IN_BITS-1:0]}),
        .s_axis_tvalid, .s_axis_tready,
        .m_axis_tdata(in_data), .m_axis_tvalid(in_valid), .m_axis_tready(in_ready)
    );

    // ---------------------------------------------------------------- table
    logic                 loading;
    logic [ADDR_BITS-1:0] addr1;
    logic [LUT_BITS-1:0]  entry2;
    logic                 ce;

    stream_lut #(.WIDTH(LUT_BITS), .DEPTH(DEPTH)) u_lut (
        .ap_clk, .ap_rst_n,
        .s_axis_tdata(s_axis_lut_tdata), .s_axis_tvalid(s_axis_lut_tvalid),
        .s_axis_tready(s_axis_lut_tready), .s_axis_tlast(s_axis_lut_tlast),
        .loading,
        .rd_en(ce), .rd_addr(addr1), .rd_data(entry2)
    );

    // ---------------------------------------------------------------- pipeline
    // One clock enable for all stages: the pipeline moves unless its last stage holds a
    // pixel that the output slices cannot take (both slices' tready are registers).
    logic               v1, v2, v3;
    logic [IN_BITS-1:0] adu1, adu2, adu3;
    logic               last1, last2, last3;
    logic [LUT_BITS-1:0] entry3;
    logic               code_ready, bypass_ready;

    wire out_ready = code_ready && bypass_ready;
    assign ce       = !v3 || out_ready;
    assign in_ready = ce && !loading;
    wire take = in_valid && in_ready;

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

    wire [IN_BITS-1:0]   adu0 = in_data[IN_BITS-1:0];
    logic [ADDR_BITS-1:0] addr0;  // min(adu, ADC_MAX)

    if (ADC_MAX == 2 ** IN_BITS - 1) begin : g_full_table
        assign addr0 = adu0;
    end else begin : g_clamp
        assign addr0 = adu0 > ADC_MAX_ADU ? ADDR_BITS'(ADC_MAX) : ADDR_BITS'(adu0);
    end

    always_ff @(posedge ap_clk) begin
        if (ce) begin
            addr1  <= addr0;
            adu1   <= adu0;
            last1  <= in_data[IN_BITS];
            adu2   <= adu1;             // stage 2: table read (entry2)
            last2  <= last1;
            entry3 <= entry2;           // stage 3: the block RAM's output register
            adu3   <= adu2;
            last3  <= last2;
        end
    end

    // ---------------------------------------------------------------- outputs
    wire [CODE_BITS-1:0] code3     = entry3[CODE_BITS-1:0];
    wire                 saturated = entry3[CODE_BITS];
    wire                 above     = code3 == TOP_CODE && !saturated;
    wire                 emit      = v3 && out_ready;

    logic [CODE_BITS-1:0]   code_q;
    logic [BYPASS_BITS:0]   bypass_q;  // {tlast, word}

    axis_skid_buffer #(.WIDTH(CODE_BITS)) u_code (
        .ap_clk, .ap_rst_n,
        .s_axis_tdata(code3), .s_axis_tvalid(emit), .s_axis_tready(code_ready),
        .m_axis_tdata(code_q), .m_axis_tvalid(m_axis_tvalid), .m_axis_tready(m_axis_tready)
    );

    axis_skid_buffer #(.WIDTH(BYPASS_BITS + 1)) u_bypass (
        .ap_clk, .ap_rst_n,
        .s_axis_tdata({last3, above, saturated, code3, adu3}), .s_axis_tvalid(emit),
        .s_axis_tready(bypass_ready),
        .m_axis_tdata(bypass_q), .m_axis_tvalid(m_axis_bypass_tvalid),
        .m_axis_tready(m_axis_bypass_tready)
    );

    assign m_axis_tdata        = CODE_W'(code_q);
    assign m_axis_bypass_tdata = BYPASS_W'(bypass_q[BYPASS_BITS-1:0]);
    assign m_axis_bypass_tlast = bypass_q[BYPASS_BITS];

    if (IN_W > IN_BITS) begin : g_unused_pad
        wire unused_pad = &{1'b0, s_axis_tdata[IN_W-1:IN_BITS]};
    end

endmodule

`default_nettype wire
